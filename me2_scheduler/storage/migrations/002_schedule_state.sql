-- State this rewrite keeps beside the seed's columns: why a schedule is paused,
-- its last failure, and a version for optimistic concurrency (existing rows get 0).
-- One change per statement, each skipped when the `-- unless` line above it finds
-- its effect in information_schema (see migrations.py): DDL commits as it goes, so
-- a run cut half-way re-runs safely, and MySQL 8 has no ADD COLUMN IF NOT EXISTS.

-- unless column avatar_schedules.last_failed_time
ALTER TABLE avatar_schedules
    ADD COLUMN last_failed_time DATETIME NULL COMMENT 'last failed dispatch time';

-- unless column avatar_schedules.last_error
ALTER TABLE avatar_schedules
    ADD COLUMN last_error VARCHAR(512) NULL COMMENT 'last dispatch error';

-- unless column avatar_schedules.pause_reason
ALTER TABLE avatar_schedules
    ADD COLUMN pause_reason ENUM('user', 'failures') NULL COMMENT 'why paused';

-- unless column avatar_schedules.version
ALTER TABLE avatar_schedules
    ADD COLUMN version BIGINT NOT NULL DEFAULT 0 COMMENT 'optimistic concurrency';

-- idx_status_avatar_id serves the active rows in avatar_id order (index rebuild, diary).
-- unless index avatar_schedules.idx_status_avatar_id
ALTER TABLE avatar_schedules ADD INDEX idx_status_avatar_id (status, avatar_id);
