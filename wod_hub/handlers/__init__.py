"""Thin Tornado handlers served by the hub through ``Authenticator.get_handlers``."""

from .content import ContentHandler
from .login import WodLoginHandler
from .recover import RecoverHandler
from .register import RegisterHandler
from .start import StartHandler


def get_handlers():
    from . import admin, api_admin, api_lifecycle, participant

    return [
        *api_lifecycle.get_handlers(),
        *participant.get_handlers(),
        *admin.admin_handlers(),
        *api_admin.api_admin_handlers(),
        (r"/login", WodLoginHandler),
        (r"/wod/register", RegisterHandler),
        (r"/wod/start", StartHandler),
        (r"/wod/recover", RecoverHandler),
        (r"/api/wod/content/([^/]+)", ContentHandler),
    ]
