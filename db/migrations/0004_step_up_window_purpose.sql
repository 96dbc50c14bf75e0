-- Step-up windows record what they were opened for. Windows opened before this change were bound to nothing:
-- they get a purpose no check accepts and close now (they lasted minutes at most), so none of them keeps
-- unlocking everything.
ALTER TABLE "step_up_windows" ADD COLUMN "purpose" text DEFAULT 'unbound' NOT NULL;--> statement-breakpoint
ALTER TABLE "step_up_windows" ADD COLUMN "subject" text DEFAULT '' NOT NULL;--> statement-breakpoint
UPDATE "step_up_windows" SET "expires_at" = now() WHERE "expires_at" > now();--> statement-breakpoint
ALTER TABLE "step_up_windows" ALTER COLUMN "purpose" DROP DEFAULT;--> statement-breakpoint
ALTER TABLE "step_up_windows" ALTER COLUMN "subject" DROP DEFAULT;
