from troupe.events.bus import make_event, publish

__all__ = ["make_event", "publish"]
