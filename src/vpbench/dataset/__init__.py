"""The legacy database's data: scale profiles, generated rows and their text pools, seeding
with COPY, the integrity audit and row snapshots; the reference files that ship with vpbench."""
