ALTER TABLE "scripts" ADD COLUMN "builtin" boolean DEFAULT false NOT NULL;--> statement-breakpoint
-- hand-written:
-- Whether a version is built in is part of what the version is: it cannot be changed afterwards either.
CREATE OR REPLACE FUNCTION scripts_refuse_change() RETURNS trigger AS $$
BEGIN
  IF TG_OP = 'DELETE' THEN
    RAISE EXCEPTION 'scripts: a script version cannot be deleted (disable the script instead)'
      USING ERRCODE = 'insufficient_privilege';
  END IF;
  IF (NEW.id, NEW.name, NEW.version, NEW.body, NEW.sha256, NEW.read_only, NEW.params_schema,
      NEW.min_agent_version, NEW.oses, NEW.timeout_seconds, NEW.output_cap_bytes, NEW.description,
      NEW.created_by, NEW.created_at, NEW.builtin)
     IS DISTINCT FROM
     (OLD.id, OLD.name, OLD.version, OLD.body, OLD.sha256, OLD.read_only, OLD.params_schema,
      OLD.min_agent_version, OLD.oses, OLD.timeout_seconds, OLD.output_cap_bytes, OLD.description,
      OLD.created_by, OLD.created_at, OLD.builtin) THEN
    RAISE EXCEPTION 'scripts: version % of % is immutable; add a new version instead', OLD.version, OLD.name
      USING ERRCODE = 'insufficient_privilege';
  END IF;
  RETURN NEW;
END;
$$ LANGUAGE plpgsql;
