"""Run records: what a record says (contents) and how records are written, read and tabulated (store)."""
