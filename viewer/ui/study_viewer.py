"""The study viewer at /studies/<uid>: being built (issue 6)."""

from __future__ import annotations

from flask import Blueprint

blueprint = Blueprint("ui_study_viewer", __name__)
