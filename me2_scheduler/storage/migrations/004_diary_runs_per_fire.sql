-- A diary run is identified by (run_date, fire_time), not by its date alone: the
-- daily production cron still makes one run per date, a cron firing several times
-- a day gets one run per fire (as the seed did), and one fire time is never run twice.
-- Both statements are re-runnable: the UPDATE touches only NULLs, and the ALTER
-- drops and re-adds the primary key in one statement (a table always has one).
-- Rows written before fire_time was required get their start, else the date's midnight.
UPDATE diary_runs
SET fire_time = COALESCE(started_at, CAST(CONCAT(run_date, ' 00:00:00') AS DATETIME))
WHERE fire_time IS NULL;

-- idx_fire_time serves "newest first" (status, resumable runs) without a sort of the table.
ALTER TABLE diary_runs
    MODIFY COLUMN fire_time DATETIME NOT NULL COMMENT 'cron fire time (manual run: when asked)',
    DROP PRIMARY KEY,
    ADD PRIMARY KEY (run_date, fire_time),
    ADD INDEX IF NOT EXISTS idx_fire_time (fire_time),
    COMMENT = 'diary run per fire time';
