-- GPU energy counter readings, from the NVML sampler or pushed by an external agent: the counter's
-- cumulative millijoules at a time. Attribution reads consecutive readings of one device.
CREATE TABLE energy_readings (
    device      TEXT NOT NULL,
    t_ns        INTEGER NOT NULL,
    energy_mj   INTEGER NOT NULL,
    source      TEXT NOT NULL,         -- nvml | push
    PRIMARY KEY (device, t_ns)
);
