"""Pure, frozen data: specs, revisions, tasks, nodes, events, errors. No I/O, no clock reads.

Import from the modules (``warren.domain.specs`` …): this package imports nothing, so that
``warren.domain.errors`` costs nothing where pydantic is not needed (the CLI's start-up)."""
