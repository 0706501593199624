"""`clusterprep smoke`: prove the prepared cluster can start multi-node training together.

Five phases, in order, stopping at the first that fails: names (`names.py`), rendezvous
(`rendezvous.py`), links (`links.py`), the collective (`collective.py`: real torchrun on
every node, `worker.py` in every rank) and the hand-over (`handover.py`: hostfile and launch
lines). `runner.py` chains them; `model.py` holds the results the renderers read.
"""
