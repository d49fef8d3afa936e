/* snapshotter.h - the checker's snapshotter: a thread that cuts a
 * snapshot of the volume every snap_every_ms while the writers run, and
 * judges each one, read whole right away through the NBD targets
 * (TARGET@SNAP, 1 MiB from each in turn, so the nodes' copies are mixed),
 * against the journal as it stood when the cut was asked for and when it
 * returned, and the writers' stamps meanwhile (judge.h, cutlog.h).
 *
 * The cluster is reached through run->snap_cmd, run as
 *   SNAP_CMD create|delete SNAP N
 * with N counting the commands, so the command can ask a different node
 * each time (t-lab-checker.sh maps N to a lab node); its exit status is
 * vsan's. A create that exits 10 (the cut aborted: a node away, frozen or
 * cut off) is counted and fine; any other failure (no quorum on the node
 * asked, its daemon down) is tried again at once through the next N, up
 * to three times, under a new name: a create that failed might still
 * have been cut, and its name is deleted later like any other. A create
 * still running after 20 s is killed and counted as hung (run->snap_hung):
 * a vsan bug to look at, but not one this test is about. Snapshots
 * beyond snap_keep are deleted, oldest first; a delete that fails (10: a
 * reader has the snapshot) is tried again after the next cut.
 *
 * Why in C, in the checker, rather than a shell loop beside the nemesis:
 * the judge needs the journal's per-block bounds at the moment the
 * command is sent and the moment it returns, and the order of the writes
 * around it, which only the process that writes knows; a shell loop
 * would need every write's time on disk. The command stays a shell
 * script of the test's, so the checker knows nothing of the lab.
 *
 * Each cut is recorded, with its interval (ms since the snapshotter
 * started), in LOG.snaps beside the journal; the totals go to the
 * journal (snapshots, snap_checked, snap_bad) and run->snap_aborted,
 * run->snap_failed, run->snap_hung.
 */
#ifndef VSAN_CHECKER_SNAPSHOTTER_H
#define VSAN_CHECKER_SNAPSHOTTER_H

struct chk_run;
struct chk_snapshotter;

/* Starts the snapshotter if run->snap_cmd is set (*out NULL otherwise);
 * 0, or -errno. */
int chk_snapshotter_start(struct chk_run *run, struct chk_snapshotter **out);

/* Waits for it, once run->stop is set (the snapshot being judged is
 * finished first), and frees it; NULL is a no-op. */
void chk_snapshotter_join(struct chk_snapshotter *s);

#endif
