"""labkit: the library behind the self-hosted LLM lab (sizing, download, upload, image, template, deploy, query, bench)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("labkit")
except PackageNotFoundError:  # running from a source tree without an install
    __version__ = "0.0.0"
