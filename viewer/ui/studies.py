"""The study list (reading list): being built (issue 6)."""

from __future__ import annotations

from flask import Blueprint

blueprint = Blueprint("ui_studies", __name__)
