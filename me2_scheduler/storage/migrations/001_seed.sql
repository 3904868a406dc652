-- The seed's avatar_schedules table, verbatim, so an existing Me2 database works unchanged.
CREATE TABLE IF NOT EXISTS avatar_schedules (
    id BIGINT AUTO_INCREMENT PRIMARY KEY,
    avatar_id BIGINT NOT NULL UNIQUE COMMENT '分身ID',
    status ENUM('active', 'paused', 'disabled') DEFAULT 'active' COMMENT '调度状态',
    next_schedule_time DATETIME NOT NULL COMMENT '下次调度时间',
    last_schedule_time DATETIME DEFAULT NULL COMMENT '上次调度时间',
    last_action_type VARCHAR(50) DEFAULT NULL COMMENT '上次行为类型',
    schedule_count INT DEFAULT 0 COMMENT '总调度次数',
    failed_count INT DEFAULT 0 COMMENT '失败次数',
    created_at DATETIME DEFAULT CURRENT_TIMESTAMP,
    updated_at DATETIME DEFAULT CURRENT_TIMESTAMP ON UPDATE CURRENT_TIMESTAMP,
    INDEX idx_next_schedule_time (next_schedule_time, status)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci COMMENT='分身调度配置表';
