"""The Flask application of the HTTP edge."""

from __future__ import annotations

from flask import Flask, Response, g, jsonify, request

from archive import Archive
from viewer import errors, qido, wado
from viewer.auth import CHALLENGE, Authenticator, Throttled, Unauthorized
from viewer.config import WebConfig

#: Paths anyone may call: they show no patient data.
ANONYMOUS = frozenset({"/healthz"})


def create_app(archive: Archive, config: WebConfig | None = None) -> Flask:
    """The app over `archive`; the caller owns the archive and closes it."""
    app = Flask("minipacs")
    app.config["ARCHIVE"] = archive
    app.config["WEB"] = config or WebConfig()
    authenticator = Authenticator(archive.accounts)
    errors.register(app)

    @app.before_request
    def who_is_asking() -> Response | None:
        if request.path in ANONYMOUS:
            return None
        try:
            g.principal = authenticator.principal(request)
        except Unauthorized as exc:
            return errors.json_error(401, exc.message, {"WWW-Authenticate": CHALLENGE})
        except Throttled as exc:
            return errors.json_error(429, str(exc), {"Retry-After": str(exc.retry_after)})
        return None

    @app.after_request
    def no_caching_of_patient_data(response: Response) -> Response:
        response.headers.setdefault("Cache-Control", "no-store")
        response.headers["X-Content-Type-Options"] = "nosniff"
        return response

    @app.get("/healthz")
    def healthz() -> Response:
        stats = archive.statistics()
        return jsonify({"status": "ok", "instances": stats.instances})

    app.register_blueprint(qido.blueprint, url_prefix="/dicomweb")
    app.register_blueprint(wado.blueprint, url_prefix="/dicomweb")
    return app
