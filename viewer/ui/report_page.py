"""The report panel on a page of its own (/ui/report/<uid>): being built (issue 6)."""

from __future__ import annotations

from flask import Blueprint

blueprint = Blueprint("ui_report", __name__)
