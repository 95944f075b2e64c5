"""The annotation app's request body limits (enforced by :class:`polyfuse.body_limit.BodySizeLimit`)."""

from __future__ import annotations

import re

MAX_BODY_BYTES = 64 * 1024  # an answer is a few dozen bytes
BULK_BODY_BYTES = 32 * 1024 * 1024  # a training run posting segments, queries or labels in batches
BULK_PATHS = re.compile(r"^/api/v1/projects/[^/]+/(segments|queries|labels)$")
