"""Headless Chromium (Debian's chromium + chromium-driver, driven by Selenium) pointed at a
test server: it trusts exactly the server's certificate, by the SHA-256 of its public key
(--ignore-certificate-errors-spki-list), and reaches the server by its host name through
--host-resolver-rules: no blanket --ignore-certificate-errors, no name mismatch. The console
is logged at every level, so a test can require it free of errors.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
from collections.abc import Iterator
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.remote.webdriver import WebDriver

from .conftest import HOSTNAME, Postroom, require_program


def spki_hash(cert_path: Path) -> str:
    """Base64 of the SHA-256 of a certificate's SubjectPublicKeyInfo, as Chromium takes it."""
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    der = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(hashlib.sha256(der).digest()).decode()


@contextlib.contextmanager
def chromium(server: Postroom, profile: Path) -> Iterator[WebDriver]:
    """A headless Chromium for `server` (profile in the directory `profile`), quit after."""
    binary = require_program("chromium")
    driver_path = require_program("chromedriver")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for argument in (
        "--headless=new",
        "--no-sandbox",  # the tests may run as root, where Chromium's sandbox refuses to start
        "--disable-dev-shm-usage",
        "--window-size=1280,900",
        f"--user-data-dir={profile}",
        f"--host-resolver-rules=MAP {HOSTNAME} {server.host}",
        f"--ignore-certificate-errors-spki-list={spki_hash(server.data_dir / 'tls' / 'cert.pem')}",
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    try:
        yield driver
    finally:
        driver.quit()
