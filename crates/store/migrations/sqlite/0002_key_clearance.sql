-- A key's clearance: the highest label it may read, as the canonical banner of the scheme in force
-- when it was made. Keys made before clearances existed get the empty string, which the gateway
-- reads as the scheme's lowest level.
ALTER TABLE api_keys ADD COLUMN clearance TEXT NOT NULL DEFAULT '';
