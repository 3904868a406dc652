-- One row per dispatch (pruned by age), and one row per diary date (claim + checkpoint).
CREATE TABLE IF NOT EXISTS avatar_schedule_history (
    id BIGINT AUTO_INCREMENT PRIMARY KEY,
    avatar_id BIGINT NOT NULL COMMENT 'avatar ID',
    `trigger` ENUM('auto', 'manual') NOT NULL COMMENT 'who asked for the dispatch',
    planned_time DATETIME NULL COMMENT 'the slot dispatched (NULL: manual)',
    started_time DATETIME NOT NULL,
    finished_time DATETIME NULL,
    outcome ENUM('success', 'failure', 'skipped') NOT NULL,
    action_type VARCHAR(50) NULL,
    action_id BIGINT NULL,
    error VARCHAR(512) NULL,
    lag_ms INT NULL COMMENT 'started_time - planned_time, milliseconds',
    idempotency_key VARCHAR(64) NULL COMMENT 'avatar_id:planned epoch ms',
    INDEX idx_avatar_id_id (avatar_id, id),
    INDEX idx_started_time (started_time)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci COMMENT='avatar dispatch history';

CREATE TABLE IF NOT EXISTS diary_runs (
    run_date DATE NOT NULL PRIMARY KEY,
    status ENUM('running', 'done', 'failed') NOT NULL,
    checkpoint_avatar_id BIGINT NOT NULL DEFAULT 0 COMMENT 'last avatar_id done',
    success_count INT NOT NULL DEFAULT 0,
    failure_count INT NOT NULL DEFAULT 0,
    total INT NULL,
    owner VARCHAR(128) NULL COMMENT 'host:pid running it',
    fire_time DATETIME NULL,
    started_at DATETIME NULL,
    heartbeat_at DATETIME NULL,
    finished_at DATETIME NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci COMMENT='diary run per date';
