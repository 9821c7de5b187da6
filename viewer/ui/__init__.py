"""The staff web UI: server-rendered pages (Jinja) with a little JavaScript.

Staff pages live under /ui/; the study viewer at /studies/<uid> (the URL
IHE IID opens). Each module is one screen (or a family of screens) with its
own blueprint, templates in templates/ui/, scripts and styles in
static/ui/ and Vietnamese in translations/vi/LC_MESSAGES/<module>.po.
"""

from __future__ import annotations

from flask import Flask

from viewer.ui import admin, base, report_page, studies, study_viewer, technologist

#: Paths whose pages find out who is asking themselves (a browser without a session is sent to log in).
PREFIXES = (base.PREFIX,)


def register(app: Flask) -> None:
    app.register_blueprint(base.blueprint)
    app.register_blueprint(studies.blueprint, url_prefix="/ui/studies")
    app.register_blueprint(technologist.blueprint, url_prefix="/ui/worklist")
    app.register_blueprint(admin.blueprint, url_prefix="/ui/admin")
    app.register_blueprint(report_page.blueprint, url_prefix="/ui/report")
    app.register_blueprint(study_viewer.blueprint)
