ALTER TABLE "scripts" DROP CONSTRAINT "scripts_name_unique";--> statement-breakpoint
ALTER TABLE "scripts" ADD COLUMN "timeout_seconds" integer DEFAULT 600 NOT NULL;--> statement-breakpoint
ALTER TABLE "scripts" ADD COLUMN "output_cap_bytes" integer DEFAULT 1048576 NOT NULL;--> statement-breakpoint
ALTER TABLE "scripts" ADD COLUMN "disabled_at" timestamp with time zone;--> statement-breakpoint
CREATE UNIQUE INDEX "scripts_name_version" ON "scripts" USING btree ("name","version");--> statement-breakpoint
-- hand-written:
-- A script version is immutable: a request pins its row and SHA-256, so the database refuses to change
-- what a version is (only disabling it is allowed) and to delete one.
CREATE OR REPLACE FUNCTION scripts_refuse_change() RETURNS trigger AS $$
BEGIN
  IF TG_OP = 'DELETE' THEN
    RAISE EXCEPTION 'scripts: a script version cannot be deleted (disable the script instead)'
      USING ERRCODE = 'insufficient_privilege';
  END IF;
  IF (NEW.id, NEW.name, NEW.version, NEW.body, NEW.sha256, NEW.read_only, NEW.params_schema,
      NEW.min_agent_version, NEW.oses, NEW.timeout_seconds, NEW.output_cap_bytes, NEW.description,
      NEW.created_by, NEW.created_at)
     IS DISTINCT FROM
     (OLD.id, OLD.name, OLD.version, OLD.body, OLD.sha256, OLD.read_only, OLD.params_schema,
      OLD.min_agent_version, OLD.oses, OLD.timeout_seconds, OLD.output_cap_bytes, OLD.description,
      OLD.created_by, OLD.created_at) THEN
    RAISE EXCEPTION 'scripts: version % of % is immutable; add a new version instead', OLD.version, OLD.name
      USING ERRCODE = 'insufficient_privilege';
  END IF;
  RETURN NEW;
END;
$$ LANGUAGE plpgsql;
--> statement-breakpoint
CREATE TRIGGER scripts_immutable BEFORE UPDATE OR DELETE ON scripts
  FOR EACH ROW EXECUTE FUNCTION scripts_refuse_change();
