"""The indexer's base error: a catalogue, bundle or option it cannot work with. The command line
maps it (with the model's) to one line and exit code 2; the service to a failed job."""

from __future__ import annotations


class IndexerError(Exception):
    """Base of BundleError, CatalogueError and bad index options; the message says what to fix."""
