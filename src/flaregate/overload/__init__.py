"""Load shedding: an adaptive in-flight limit per process/isolate and priority admission."""

from flaregate.overload.limit import AimdLimit
from flaregate.overload.shedder import LoadShedder, Permit, Priority

__all__ = ["AimdLimit", "LoadShedder", "Permit", "Priority"]
