"""What never reaches a screen, a log or a file verbatim: credentials inside URLs (study storages)."""

from __future__ import annotations

# the storage URL from the environment (a password in it never appears in a command line: `tlr study` hands it to
# its worker processes this way, and a user or a cluster script can too)
STORAGE_ENV = "TLR_STORAGE"


def mask_url(url: str) -> str:
    """The URL with its password replaced by *** (for anything printed, logged or stored).

    Everything between the user name and the last `@` of the authority is the password, so a password that itself
    holds `@` or `:` is masked whole; a URL with credentials but no user name is masked entirely."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    authority, slash, path = rest.partition("/")
    if "@" not in authority:
        return url
    userinfo, _, host = authority.rpartition("@")
    user, colon, _ = userinfo.partition(":")
    masked = f"{user}:***" if colon and user else "***"
    return f"{scheme}://{masked}@{host}{slash}{path}"

