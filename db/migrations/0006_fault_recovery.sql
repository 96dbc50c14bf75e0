CREATE INDEX "deliveries_unreported" ON "deliveries" USING btree ("finished_at") WHERE reported_at is null and state in ('succeeded','failed','expired');--> statement-breakpoint
-- hand-written: results finished before this release were reported (or deliberately not) by the old
-- reporter, which marked only what it posted; the catch-up must not post them all again on upgrade.
UPDATE "deliveries" SET "reported_at" = coalesce("finished_at", now()) WHERE "reported_at" IS NULL AND "state" IN ('succeeded','failed','expired');
