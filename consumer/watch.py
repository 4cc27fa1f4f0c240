"""Noticing that a model deployment has finished changing the models directory."""

from __future__ import annotations

import os
import stat
from pathlib import Path

Fingerprint = frozenset[tuple[str, int, int]]


class DirectoryWatch:
    """Says when the files of a directory have changed and then stayed the same for one
    look, once per change.

    A deployment copies a manifest and its ONNX files one by one, in any order. Watching
    the manifest alone missed the deployments that wrote it first: the half-copied set
    was refused (its files did not match the manifest's hashes) and the files that came
    after changed nothing that was watched. Waiting for the set to settle also keeps a
    copy in progress from being loaded (and refused) at all.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._seen = self._handled = self.fingerprint()

    def fingerprint(self) -> Fingerprint:
        """(name, modification time, size) of each regular file, following symbolic links
        (a Kubernetes volume swaps a link to a new directory of files)."""
        files = set()
        try:
            entries = list(os.scandir(self.directory))
        except OSError:  # gone for now: an empty set, which is a change like any other
            return frozenset()
        for entry in entries:
            try:
                st = entry.stat()
            except OSError:  # removed between listing and stat
                continue
            if stat.S_ISREG(st.st_mode):
                files.add((entry.name, st.st_mtime_ns, st.st_size))
        return frozenset(files)

    def settled_change(self) -> bool:
        """True once the files differ from the last settled set and are the same as at
        the previous look."""
        now = self.fingerprint()
        if now != self._seen:
            self._seen = now
            return False
        if now == self._handled:
            return False
        self._handled = now
        return True
