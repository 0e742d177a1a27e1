// The V8 flags every long-running mesh process (sidecar, control plane) is started with, and why; bin/mesh holds the same list.

/**
 * A young generation of a fixed 16 MB (two 8 MB semi-spaces).
 *
 * Left to itself, V8 grows the young generation to 32 MB under load and shrinks it back to 1 MB when the allocation rate
 * drops, and at a sidecar's moderate loads it did both every few minutes: RSS stepped by ~30 MB, which hides a real leak
 * in any RSS trend (the soak's 1 MB per 10 minutes target was unmeasurable). A fixed size ends the growing and shrinking
 * (V8 still releases one 8 MB semi-space after a full GC while a process allocates under 1 MB/s, and commits it again
 * at the next scavenge) and, in
 * `npm run bench:wrk` alternated with the default, cost no throughput; 1 MB (`--max-semi-space-size=1`) kept RSS flatter
 * but cost about a quarter of the pair's throughput (bench/results/young-generation.md).
 * `--min-semi-space-size` is not allowed in NODE_OPTIONS, which is why these go on node's command line.
 */
export const LONG_RUNNING_NODE_FLAGS: readonly string[] = Object.freeze(['--min-semi-space-size=8', '--max-semi-space-size=8']);
