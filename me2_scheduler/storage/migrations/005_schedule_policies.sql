-- One scheduling policy per avatar (README "Scheduling policies"): its JSON form,
-- as schedule_policy.policy_to_dict writes it. An avatar without a row follows the
-- service default (ActionSchedule.*, Timezone), which is today's behaviour.
CREATE TABLE IF NOT EXISTS avatar_schedule_policies (
    avatar_id BIGINT NOT NULL PRIMARY KEY COMMENT 'avatar ID',
    policy TEXT NOT NULL COMMENT 'the policy, JSON',
    updated_at DATETIME NOT NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci COMMENT='avatar scheduling policy';
