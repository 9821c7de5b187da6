"""The Flask application of the HTTP edge."""

from __future__ import annotations

from typing import TYPE_CHECKING

from flask import Flask, Response, g, redirect, request
from werkzeug.wrappers import Response as BaseResponse

from archive import Archive
from viewer import admin_api, cors, errors, qido, rendered, session, wado, wado_uri
from viewer import fhir, orders_api, reports_api, stow, worklist_api
from viewer import health, i18n, iid, pages, share, ui
from viewer.access import ANONYMOUS as ANONYMOUS_ROLE
from viewer.auth import CHALLENGE, Authenticator, Principal, Throttled, Unauthorized
from viewer.config import WebConfig
from viewer.render_cache import RenderCache
from viewer.session import SessionRefused, principal_from_session
from worklist.service import Worklist

if TYPE_CHECKING:
    from reports.service import Reports

#: Paths anyone may call: they show no patient data.
ANONYMOUS = frozenset({"/healthz", "/metrics", "/login", "/"})
#: Pages that find out who is asking themselves: a patient's share link (the link is the key),
#: IID and its login page (a browser without a session is sent to log in, not answered 401).
_OWN_VISITOR_PREFIXES = (share.PREFIX, pages.ASSETS_PREFIX, *iid.PREFIXES, *ui.PREFIXES)
#: What http.anonymous_read opens to callers without credentials: reading images, nothing else.
_ANONYMOUS_READ_PREFIXES = ("/dicomweb/", "/wado")


def create_app(archive: Archive, config: WebConfig | None = None, worklist: Worklist | None = None,
               reports: Reports | None = None) -> Flask:  # fmt: skip
    """The app over `archive`; the caller owns the archive and closes it.

    Without a `worklist` the order, FHIR and worklist endpoints answer 503;
    without `reports`, the report endpoints do.
    """
    app = Flask("minipacs")
    config = config or WebConfig()
    app.config["ARCHIVE"] = archive
    app.config["WORKLIST"] = worklist
    app.config["REPORTS"] = reports
    app.config["WEB"] = config
    authenticator = Authenticator(archive.accounts)
    app.config["AUTHENTICATOR"] = authenticator
    app.config["RENDER_CACHE"] = RenderCache(config.cache_dir, config.cache_bytes) if config.cache_dir else None
    session.configure(app, archive, config.secret_file)
    i18n.configure(app)
    _compress(app)
    errors.register(app)

    @app.errorhandler(Unauthorized)
    def unauthorized(exc: Unauthorized) -> Response:
        # No Basic challenge for a failed form login: a browser would pop up its own dialog.
        headers = {} if request.path == "/login" else {"WWW-Authenticate": CHALLENGE}
        return errors.json_error(401, exc.message, headers)

    @app.errorhandler(Throttled)
    def throttled(exc: Throttled) -> Response:
        return errors.json_error(429, str(exc), {"Retry-After": str(exc.retry_after)})

    @app.errorhandler(SessionRefused)
    def session_refused(exc: SessionRefused) -> Response:
        return errors.json_error(exc.status, exc.message)

    @app.before_request
    def who_is_asking() -> Response | None:
        preflight = cors.preflight(config.cors_origins)
        if preflight is not None:
            return preflight
        if request.path in ANONYMOUS or request.path.startswith(_OWN_VISITOR_PREFIXES):
            return None
        g.principal = _principal(archive, authenticator, config)
        return None

    @app.after_request
    def headers(response: Response) -> Response:
        response.headers.setdefault("Cache-Control", "no-store")
        response.headers["X-Content-Type-Options"] = "nosniff"
        cors.add_headers(response, config.cors_origins)
        return response

    @app.get("/")
    def root() -> BaseResponse:
        """A person typing the server's address lands on their start page (or the login page)."""
        return pages.secure(redirect("/ui/", 303))

    app.register_blueprint(health.blueprint)
    app.register_blueprint(session.blueprint)
    app.register_blueprint(qido.blueprint, url_prefix="/dicomweb")
    app.register_blueprint(wado.blueprint, url_prefix="/dicomweb")
    app.register_blueprint(stow.blueprint, url_prefix="/dicomweb")
    app.register_blueprint(rendered.blueprint, url_prefix="/dicomweb")
    app.register_blueprint(wado_uri.blueprint)
    app.register_blueprint(admin_api.blueprint, url_prefix="/api")
    app.register_blueprint(orders_api.blueprint, url_prefix="/api/orders")
    app.register_blueprint(worklist_api.blueprint, url_prefix="/api/worklist")
    app.register_blueprint(fhir.blueprint, url_prefix="/fhir")
    app.register_blueprint(reports_api.blueprint, url_prefix="/api")
    share.configure(app, config, reports)
    app.register_blueprint(pages.blueprint)
    app.register_blueprint(share.blueprint, url_prefix="/s")
    app.register_blueprint(share.api, url_prefix="/api/share-links")
    app.register_blueprint(iid.blueprint)
    app.register_blueprint(iid.api, url_prefix="/api/iid-tokens")
    ui.register(app)
    return app


#: What is compressed on the way out: the UI's scripts and styles (a quarter of their size, for a slow link).
#: Not HTML: a page carries its CSRF token next to text the visitor typed (BREACH). Not JSON: compressing
#: changes a strong ETag (RFC 9110 8.8.3), and the report API's If-Match locking compares those.
#: Not images: already JPEG or PNG.
COMPRESSED = ["text/css", "text/javascript", "application/javascript"]


def _compress(app: Flask) -> None:
    from flask_compress import Compress

    app.config.update(COMPRESS_MIMETYPES=COMPRESSED, COMPRESS_ALGORITHM=["br", "gzip"], COMPRESS_MIN_SIZE=1024,
                      COMPRESS_STREAMS=False)  # fmt: skip
    Compress(app)


def _principal(archive: Archive, authenticator: Authenticator, config: WebConfig) -> Principal:
    """Credentials first (Basic, Bearer), then the session cookie, then anonymous reading if enabled."""
    if request.headers.get("Authorization"):
        return authenticator.principal(request)
    principal = principal_from_session(archive)
    if principal is not None:
        return principal
    if (config.anonymous_read and request.method in ("GET", "HEAD")
            and request.path.startswith(_ANONYMOUS_READ_PREFIXES)):  # fmt: skip
        return Principal("anonymous", ANONYMOUS_ROLE, "anonymous")
    raise Unauthorized("log in: HTTP Basic (user name and password), a Bearer token, or POST /login")
