-- A diary run is identified by (run_date, fire_time), not by its date alone: the
-- daily production cron still makes one run per date, a cron firing several times
-- a day gets one run per fire (as the seed did), and one fire time is never run twice.
-- Every statement re-runs safely (DDL commits as it goes): the UPDATE touches only
-- NULLs, MODIFY and COMMENT set what they set, and the key changes are skipped when
-- the `-- unless` line above them finds them done (see migrations.py).

-- Rows written before fire_time was required get their start, else the date's midnight.
UPDATE diary_runs
SET fire_time = COALESCE(started_at, CAST(CONCAT(run_date, ' 00:00:00') AS DATETIME))
WHERE fire_time IS NULL;

ALTER TABLE diary_runs
    MODIFY COLUMN fire_time DATETIME NOT NULL COMMENT 'cron fire time (manual run: when asked)';

-- One statement, so the table is never without a primary key.
-- unless index diary_runs.PRIMARY (run_date, fire_time)
ALTER TABLE diary_runs DROP PRIMARY KEY, ADD PRIMARY KEY (run_date, fire_time);

-- idx_fire_time serves "newest first" (status, resumable runs) without a sort of the table.
-- unless index diary_runs.idx_fire_time
ALTER TABLE diary_runs ADD INDEX idx_fire_time (fire_time);

ALTER TABLE diary_runs COMMENT = 'diary run per fire time';
