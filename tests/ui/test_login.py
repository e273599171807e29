"""Signing in from the UI in a real Chromium: a page asked for without a session leads
to the sign-in page and back after; a wrong token is refused on the page; the one-time
link a fresh store printed signs its administrator in; signing out ends the session."""

from __future__ import annotations

from typing import Any

from playwright.sync_api import expect

from .conftest import TIMEOUT_MS, Server, shot


def test_signing_in_with_a_token_and_out_again(browser: Any, server: Server) -> None:
    context = browser.new_context()  # nobody signed in
    try:
        page = context.new_page()
        page.goto(f"{server.origin}/?catalog")
        expect(page).to_have_url(f"{server.origin}/login?next=/%3Fcatalog", timeout=TIMEOUT_MS)
        page.get_by_label("token").fill("ss1.0000000000000000.c1.nothing")
        page.get_by_role("button", name="sign in").click()
        expect(page.locator(".problem")).to_contain_text("issued by another deployment",
                                                         timeout=TIMEOUT_MS)
        shot(page, "login-refused")
        page.get_by_label("token").fill(server.token)
        page.get_by_role("button", name="sign in").click()
        # back where it was asked from, signed in: the page reads the API
        expect(page).to_have_url(f"{server.origin}/?catalog", timeout=TIMEOUT_MS)
        expect(page.locator('section[data-saga="demo"]')).to_be_visible(timeout=TIMEOUT_MS)
        page.goto(f"{server.origin}/")
        page.get_by_role("button", name="sign out").click()
        expect(page).to_have_url(f"{server.origin}/login", timeout=TIMEOUT_MS)
        page.goto(f"{server.origin}/")  # the session is over
        expect(page).to_have_url(f"{server.origin}/login?next=/", timeout=TIMEOUT_MS)
        shot(page, "login")
    finally:
        context.close()


def test_the_first_start_s_link_signs_the_administrator_in(browser: Any,
                                                            server: Server) -> None:
    assert server.login_url is not None  # a fresh store: its first start printed it
    context = browser.new_context()
    try:
        page = context.new_page()
        page.goto(server.login_url)
        expect(page).to_have_url(f"{server.origin}/", timeout=TIMEOUT_MS)
        expect(page.locator("h1")).to_have_text("Works", timeout=TIMEOUT_MS)
        who = page.evaluate("() => fetch('/auth/whoami').then((r) => r.json())")
        assert who == {"signedIn": True, "name": "admin"}
    finally:
        context.close()
