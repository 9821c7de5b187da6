"""The administrator's pages: being built (issue 6)."""

from __future__ import annotations

from flask import Blueprint

blueprint = Blueprint("ui_admin", __name__)
