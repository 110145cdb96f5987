"""The hub login page, extended with the workshop catalog and the registration form."""

from __future__ import annotations

from jupyterhub.handlers.login import LoginHandler

from .base import WodMixin
from .participant import ended_notice

REGISTRATION_FIELDS = ("email", "first_name", "last_name", "company", "workshop", "terms")


class WodLoginHandler(WodMixin, LoginHandler):
    """JupyterHub's LoginHandler (admin/student password sign-in stays as is) whose
    page also lists the catalog and carries the registration form."""

    async def _render(self, login_error=None, username=None, **kwargs):
        wod = await self.wod_ready()
        cards = await wod.catalog_cards(self.authenticator.popular_count)
        form = kwargs.pop("wod_form", None) or {}
        if not form.get("workshop"):
            wanted = self.get_argument("workshop", default="")
            form = {**form, "workshop": wanted}
        ns = {
            "wod_cards": cards,
            "wod_categories": sorted({c for card in cards for c in card.categories}),
            "wod_form": form,
            "wod_errors": kwargs.pop("wod_errors", None) or {},
            "wod_notice": kwargs.pop("wod_notice", None) or await ended_notice(self),
            "wod_terms_url": self.authenticator.terms_url,
            "wod_terms_text": self.authenticator.terms_text,
            "wod_require_company": self.authenticator.require_company,
            "wod_brand": self.authenticator.brand_name,
            "wod_register_url": self.hub.base_url + "wod/register",
            "wod_recover_url": self.hub.base_url + "wod/recover",
        }
        return await super()._render(
            login_error=login_error, username=username or "", **ns, **kwargs
        )
