"""The command line: parse, call the public API, render. No logic lives here."""
