-- GPU energy counter readings: the counter's cumulative millijoules at a time, per device.
CREATE TABLE energy_readings (
    device      TEXT COLLATE "C" NOT NULL,
    t_ns        BIGINT NOT NULL,
    energy_mj   BIGINT NOT NULL,
    source      TEXT NOT NULL,         -- nvml | push
    PRIMARY KEY (device, t_ns)
);
