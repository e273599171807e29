"""Users and sessions run as sagas: a user is a principal (a person) with an email, an
optional phone, an argon2id password hash and a state; sign-up waits for the email's
confirmation and removes the user when it does not come in time; login and logout
with server-side sessions, rate-limited, answering an unknown email as a wrong
password; password reset by a mailed token (or an SMS code); phone confirmation by an
SMS code; login with an OpenID Connect provider.

See :mod:`.app` for loading it, :mod:`.config` for its ``[users]`` section,
:mod:`.sagas` for the sagas and the operations, :mod:`.accounts` for the users in the
store and :mod:`.part` for the API's fields.
"""

from __future__ import annotations

from .accounts import check_login, login, revoke_session, sessions, user
from .app import app, users_app
from .config import OidcSpec, UsersConfig, parse
from .errors import SignInError, TokenError, UserInputError, UsersConfigError, UsersError
from .passwords import Passwords
from .sagas import (
    UsersPack,
    confirm_phone,
    confirm_sign_up,
    request_phone_code,
    request_reset,
    reset_password,
    sign_up,
    users_sagas,
)

__all__ = ["OidcSpec", "Passwords", "SignInError", "TokenError", "UserInputError",
           "UsersConfig", "UsersConfigError", "UsersError", "UsersPack", "app",
           "check_login", "confirm_phone", "confirm_sign_up", "login", "parse",
           "request_phone_code", "request_reset", "reset_password", "revoke_session",
           "sessions", "sign_up", "user", "users_app", "users_sagas"]
