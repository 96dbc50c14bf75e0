CREATE TABLE "chat_outbox" (
	"id" bigserial PRIMARY KEY NOT NULL,
	"platform" text NOT NULL,
	"kind" text NOT NULL,
	"target" jsonb NOT NULL,
	"lane" text NOT NULL,
	"coalesce_key" text,
	"payload" jsonb NOT NULL,
	"state" text DEFAULT 'pending' NOT NULL,
	"attempts" integer DEFAULT 0 NOT NULL,
	"next_attempt_at" timestamp with time zone,
	"lease_until" timestamp with time zone,
	"last_error" text,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	"sent_at" timestamp with time zone
);
--> statement-breakpoint
CREATE INDEX "chat_outbox_open" ON "chat_outbox" USING btree ("lane","id") WHERE state in ('pending','sending');--> statement-breakpoint
CREATE INDEX "chat_outbox_lane_sent" ON "chat_outbox" USING btree ("lane","sent_at") WHERE state = 'sent';--> statement-breakpoint
CREATE UNIQUE INDEX "chat_outbox_coalesce" ON "chat_outbox" USING btree ("coalesce_key") WHERE state = 'pending';