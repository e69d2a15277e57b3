import { ErrorState, Skeleton } from "../../components/ui";
import { formatTime, timeAgo } from "../../lib/format";
import type { BackupStatus } from "../../lib/types";
import { useHealth } from "./api";

function BackupState({ backup }: { backup: BackupStatus }) {
  const success = backup.last_success;
  const failure = backup.last_failure;
  const failing = failure && (!success || failure.at > success.at);
  return (
    <>
      <p className="small flush" data-testid="last-backup">
        {success
          ? `Last verified backup: ${formatTime(success.at)} (${timeAgo(success.at)}), ${success.file}, ${success.rows} rows.`
          : "No verified backup yet."}
      </p>
      {failing && (
        <p className="notice error flush" role="status">
          The last backup failed ({formatTime(failure.at)}): {failure.error}
        </p>
      )}
    </>
  );
}

export function Backups() {
  const health = useHealth();
  const backup = health.data?.components?.backup;
  return (
    <section className="card stack" aria-labelledby="backups-title">
      <h2 id="backups-title">Backups</h2>
      {health.isPending && <Skeleton lines={1} label="Loading the backup status" />}
      {health.isError && <ErrorState error={health.error} retry={() => health.refetch()} />}
      {backup && <BackupState backup={backup} />}
      <p className="small muted flush">
        Scheduled with <code>PLANTOPS_BACKUP_SCHEDULE</code> (cron, e.g. <code>0 3 * * *</code>); each backup is
        restored into a scratch database and checked before it counts.
      </p>
    </section>
  );
}
