// 统计's charts (Apache ECharts, served from vendor/echarts). The numbers come from the page's JSON block, the
// same ones its tables show: without JavaScript the page still reads.
(function () {
  var block = document.getElementById("stats-data");
  if (!block || !window.echarts) { return; }
  var data = JSON.parse(block.textContent);
  var COLORS = ["#9fb8c8", "#12506f", "#2e8b57", "#d08a1a"];
  var RATES = [["response", "响应率"], ["resolution", "办结率"], ["satisfaction", "满意率"]];
  var charts = [];
  var phone = window.matchMedia("(max-width: 760px)").matches;

  function draw(id, option, rows) {
    var node = document.getElementById(id);
    if (!node) { return; }
    if (rows) { node.style.height = Math.max(160, Math.min(640, 40 + 28 * rows)) + "px"; }  // a bar a row
    var chart = window.echarts.init(node, null, { renderer: "canvas" });
    chart.setOption(Object.assign({ color: COLORS, animation: false, textStyle: { fontFamily: "inherit" } }, option));
    charts.push(chart);
  }

  function percentAxis() {
    return { type: "value", min: 0, max: 100, axisLabel: { formatter: "{value}%" }, splitLine: { show: false } };
  }

  function rateSeries(rows, type) {
    return RATES.map(function (r) {
      return { name: r[1], type: type, yAxisIndex: 1, data: rows[r[0]], connectNulls: false,
               tooltip: { valueFormatter: function (v) { return v == null ? "—" : v + "%"; } } };
    });
  }

  var legend = { top: 0, type: "scroll" };
  var grid = { left: 44, right: 48, top: 34, bottom: 28, containLabel: false };

  // 趋势: 诉求量 as bars, the three rates as lines on a 0–100% axis.
  draw("chart-trend", {
    tooltip: { trigger: "axis" }, legend: legend, grid: grid,
    xAxis: { type: "category", data: data.trend.labels.map(function (k) { return k.slice(2); }) },
    yAxis: [{ type: "value", name: "件", minInterval: 1 }, percentAxis()],
    series: [{ name: "诉求量", type: "bar", data: data.trend.reported, barMaxWidth: 24 }]
      .concat(rateSeries(data.trend, "line"))
  });

  // 排名: the chosen measure as horizontal bars, best on top.
  var rank = data.ranking;
  var isCount = data.rank === "reported";
  draw("chart-ranking", {
    tooltip: { trigger: "axis", axisPointer: { type: "shadow" } },
    grid: { left: 8, right: 56, top: 8, bottom: 8, containLabel: true },
    xAxis: isCount ? { type: "value", minInterval: 1 } : percentAxis(),
    yAxis: { type: "category", inverse: true, data: rank.labels,
             axisLabel: { width: phone ? 80 : 140, overflow: "truncate" } },
    series: [{ name: data.rank_label, type: "bar", data: rank[data.rank], barMaxWidth: 18,
               itemStyle: { color: "#12506f" },
               label: { show: true, position: "right", formatter: isCount ? "{c}" : "{c}%" } }]
  }, rank.labels.length);

  // 分类: 诉求量 per 大类, with the three rates beside each.
  var cats = data.categories;
  draw("chart-categories", {
    tooltip: { trigger: "axis" }, legend: legend, grid: { left: 44, right: 48, top: 34, bottom: 8, containLabel: true },
    xAxis: { type: "category", data: cats.labels, axisLabel: { interval: 0, rotate: cats.labels.length > 5 ? 30 : 0 } },
    yAxis: [{ type: "value", name: "件", minInterval: 1 }, percentAxis()],
    series: [{ name: "诉求量", type: "bar", data: cats.reported, barMaxWidth: 28 }]
      .concat(rateSeries(cats, "scatter"))
  });

  window.addEventListener("resize", function () { charts.forEach(function (c) { c.resize(); }); });
})();
