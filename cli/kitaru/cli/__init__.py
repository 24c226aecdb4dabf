"""The `kitaru` command line (click). Modules here import only click and the standard
library at load time; the client layer is imported inside each command."""
