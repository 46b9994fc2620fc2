"""`steward classifier retrain`: rebuild the need classifier from the shipped messages plus staff's 改类.

The weekly job (scheduler/classifier_jobs.py) does the same when there is something new; this is for now.
"""

from __future__ import annotations

import argparse

from bot.cli_common import cli_clock, cli_operator, cli_settings, database, run
from storage.classifier import retrain


def cmd_retrain(args: argparse.Namespace) -> None:
    settings = cli_settings(args)

    async def go() -> str:
        async with database(settings) as db:
            result = await retrain(db, now=cli_clock(settings).now(), actor=cli_operator(), data_dir=settings.data_dir)
        dropped = f"（{result.dropped}条的分类代码已不在分类表中，未使用）" if result.dropped else ""
        same = "与上次相同；" if not result.changed else ""
        return (f"分类模型已重新训练：{same}内置训练语句 {result.shipped} 条"
                f" + 工作人员改类 {result.examples} 条{dropped}。\n"
                f"已写入 {result.path}，正在运行的服务会在下一条消息时换用新模型。\n"
                f"改类前后的准确率对比：python bench/classify.py --learn --examples {result.path}")

    run(go())


def register(subparsers) -> None:
    classifier = subparsers.add_parser("classifier", help="诉求自动分类 (the need classifier)")
    sub = classifier.add_subparsers(dest="classifier_command", required=True)
    sub.add_parser("retrain", help="retrain from the shipped messages plus staff's 改类").set_defaults(
        func=cmd_retrain)
