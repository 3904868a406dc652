-- State this rewrite keeps beside the seed's columns: why a schedule is paused,
-- its last failure, and a version for optimistic concurrency (existing rows get 0).
-- IF NOT EXISTS everywhere: DDL commits as it goes, so a run cut half-way re-runs safely.
-- idx_status_avatar_id serves the active rows in avatar_id order (index rebuild, diary).
ALTER TABLE avatar_schedules
    ADD COLUMN IF NOT EXISTS last_failed_time DATETIME NULL COMMENT 'last failed dispatch time',
    ADD COLUMN IF NOT EXISTS last_error VARCHAR(512) NULL COMMENT 'last dispatch error',
    ADD COLUMN IF NOT EXISTS pause_reason ENUM('user', 'failures') NULL COMMENT 'why paused',
    ADD COLUMN IF NOT EXISTS version BIGINT NOT NULL DEFAULT 0 COMMENT 'optimistic concurrency',
    ADD INDEX IF NOT EXISTS idx_status_avatar_id (status, avatar_id);
