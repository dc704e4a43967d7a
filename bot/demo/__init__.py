"""`dsr demo`: the whole product offline — the Bot API fake, the real bot, a sample county and
a messenger-like web page, in one process (docs/demo.md)."""
