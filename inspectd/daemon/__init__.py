"""The inspection daemon: drop folders -> items -> scored results (`inspectd run`)."""
