"""`clusterprep launch`: the training run on every node as one supervised gang: plan (each
node's command line), preflight (GPU counts, stale processes), gang (start, watch, tear down
at the first failure, verify), logs (per-node files and the summary), model (the results)."""
