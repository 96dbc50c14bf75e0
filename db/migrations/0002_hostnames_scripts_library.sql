-- Host names become case-insensitive: keep what the agent reported for display, store the lower-case name.
-- Twins that differ only in case (an endpoint re-enrolled as `Dc-01` beside `dc-01`) cannot both keep the
-- name: the oldest keeps it, later ones get a `-dup-<id>` suffix an admin can see in `endpoint list`.
ALTER TABLE "endpoints" ADD COLUMN "reported_hostname" text;--> statement-breakpoint
UPDATE "endpoints" SET "reported_hostname" = "hostname";--> statement-breakpoint
UPDATE "endpoints" e SET "hostname" = lower(e."hostname") || '-dup-' || substr(e."id"::text, 1, 8)
  WHERE EXISTS (
    SELECT 1 FROM "endpoints" o
    WHERE lower(o."hostname") = lower(e."hostname") AND o."id" <> e."id"
      AND (o."created_at", o."id"::text) < (e."created_at", e."id"::text)
  );--> statement-breakpoint
UPDATE "endpoints" SET "hostname" = lower("hostname") WHERE "hostname" <> lower("hostname");--> statement-breakpoint
ALTER TABLE "scripts" ADD COLUMN "version" integer DEFAULT 1 NOT NULL;--> statement-breakpoint
-- Library file names become unique so `put <name>` names one file; later duplicates get an id suffix.
UPDATE "files" f SET "name" = f."name" || '-' || substr(f."id"::text, 1, 8)
  WHERE f."kind" = 'library' AND EXISTS (
    SELECT 1 FROM "files" o
    WHERE o."kind" = 'library' AND o."name" = f."name" AND o."id" <> f."id"
      AND (o."created_at", o."id"::text) < (f."created_at", f."id"::text)
  );--> statement-breakpoint
CREATE UNIQUE INDEX "files_library_name" ON "files" USING btree ("name") WHERE kind = 'library';--> statement-breakpoint
ALTER TABLE "endpoints" ADD CONSTRAINT "endpoints_hostname_lower" CHECK ("endpoints"."hostname" = lower("endpoints"."hostname"));
