-- The devices that push over HTTP (sensor.community airRohr firmware and push API): each of a
-- device's sensors and the device it belongs to. `v_sensors` lists every sensor with its type,
-- its device (null for sensors known from files), and when it was first seen.
CREATE TABLE device_sensors (
    sensor_id    bigint      PRIMARY KEY,
    device       text        NOT NULL,
    sensor_type  text        NOT NULL,
    first_seen_at timestamptz NOT NULL DEFAULT now()
);

CREATE VIEW v_sensors AS
SELECT s.sensor_id, s.sensor_type, d.device, s.first_file_id, s.first_seen_at
FROM sensors s
LEFT JOIN device_sensors d USING (sensor_id);
