CREATE TABLE "chat_inbox" (
	"key" text PRIMARY KEY NOT NULL,
	"kind" text NOT NULL,
	"payload" jsonb NOT NULL,
	"received_at" timestamp with time zone DEFAULT now() NOT NULL,
	"processed_at" timestamp with time zone
);
--> statement-breakpoint
ALTER TABLE "deliveries" ADD COLUMN "report_claimed_at" timestamp with time zone;--> statement-breakpoint
CREATE INDEX "chat_inbox_open" ON "chat_inbox" USING btree ("received_at") WHERE processed_at is null;--> statement-breakpoint
CREATE INDEX "deliveries_unreported" ON "deliveries" USING btree ("finished_at") WHERE reported_at is null and state in ('succeeded','failed','expired');--> statement-breakpoint
-- hand-written: results finished before this release were reported (or deliberately not) by the old
-- reporter, which marked only what it posted; the catch-up must not post them all again on upgrade.
UPDATE "deliveries" SET "reported_at" = coalesce("finished_at", now()) WHERE "reported_at" IS NULL AND "state" IN ('succeeded','failed','expired');
