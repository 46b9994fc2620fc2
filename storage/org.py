"""The district's organisation: 街道 → 社区 → 网格 → 楼栋, and 区直部门/单位.

Codes are stable identifiers used in imports, QR scenes (qrscene_<building code>) and commands.
"""

from __future__ import annotations

from sqlmodel import Field, SQLModel


class Street(SQLModel, table=True):
    """街道"""

    id: int | None = Field(default=None, primary_key=True)
    code: str = Field(max_length=32, unique=True)
    name: str = Field(max_length=64)


class Community(SQLModel, table=True):
    """社区"""

    id: int | None = Field(default=None, primary_key=True)
    code: str = Field(max_length=32, unique=True)
    name: str = Field(max_length=64, index=True)
    street_id: int = Field(foreign_key="street.id", index=True)


class Grid(SQLModel, table=True):
    """网格"""

    id: int | None = Field(default=None, primary_key=True)
    code: str = Field(max_length=32, unique=True)
    name: str = Field(max_length=64)
    community_id: int = Field(foreign_key="community.id", index=True)


class Building(SQLModel, table=True):
    """楼栋. community_id repeats the grid's community so scope checks need no join."""

    id: int | None = Field(default=None, primary_key=True)
    code: str = Field(max_length=32, unique=True)
    name: str = Field(max_length=64)
    grid_id: int = Field(foreign_key="grid.id", index=True)
    community_id: int = Field(foreign_key="community.id", index=True)


class Department(SQLModel, table=True):
    """区直部门 or a unit that claims projects (enterprise, social organisation)."""

    id: int | None = Field(default=None, primary_key=True)
    code: str = Field(max_length=32, unique=True)
    name: str = Field(max_length=64)
    kind: str = Field(default="district", max_length=16)  # district | enterprise | social
