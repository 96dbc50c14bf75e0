CREATE TABLE "action_groups" (
	"request_id" uuid PRIMARY KEY NOT NULL,
	"canary" integer,
	"rate_per_minute" integer,
	"halt_at_percent" integer DEFAULT 10 NOT NULL,
	"state" text DEFAULT 'running' NOT NULL,
	"halt_reason" text,
	"paced_from" timestamp with time zone,
	"paced_released" integer DEFAULT 0 NOT NULL,
	"failures_at_resume" integer DEFAULT 0 NOT NULL,
	"progress_platform" text,
	"progress_channel_id" text,
	"progress_message_id" text,
	"progress_thread_id" text,
	"progress_edited_at" timestamp with time zone,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	"updated_at" timestamp with time zone DEFAULT now() NOT NULL
);
--> statement-breakpoint
ALTER TABLE "deliveries" ADD COLUMN "held" boolean DEFAULT false NOT NULL;--> statement-breakpoint
ALTER TABLE "action_groups" ADD CONSTRAINT "action_groups_request_id_action_requests_id_fk" FOREIGN KEY ("request_id") REFERENCES "public"."action_requests"("id") ON DELETE no action ON UPDATE no action;--> statement-breakpoint
CREATE INDEX "action_groups_state" ON "action_groups" USING btree ("state");