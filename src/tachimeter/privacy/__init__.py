"""Privacy layer: secret scrubbing, sensitive-key masking and user-id hashing (spec 406).

>>> from tachimeter.privacy import Scrubber
>>> Scrubber().scrub_text("postgres://app:hunter2@db:5432/prod")
'postgres://app:[REDACTED]@db:5432/prod'
"""

from tachimeter.privacy.scrubber import DEFAULT_SCRUBBER, Scrubber, prepare_event, sanitize_event

__all__ = ["DEFAULT_SCRUBBER", "Scrubber", "prepare_event", "sanitize_event"]
