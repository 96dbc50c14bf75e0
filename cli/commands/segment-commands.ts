import { createSegmentService } from '../../bot/segments/segment-service.ts';
import type { CliContext } from '../cli-context.ts';
import { type CommandGroup, cliArgs } from '../cli-types.ts';

const segmentsOf = (ctx: CliContext) => createSegmentService(ctx);

export const segmentCommands: CommandGroup = {
  summary: 'device segments and their Active Response switch',
  commands: {
    add: {
      summary: 'add a segment (--enable turns Active Response on)',
      args: '<name> [--enable]',
      async run(ctx, argv) {
        const { values, positionals } = cliArgs(argv, 'segment add <name> [--enable]', 1, {
          enable: { type: 'boolean' },
        });
        const s = await segmentsOf(ctx).create({ name: positionals[0]!, enabled: Boolean(values.enable) });
        ctx.out(
          `Added segment ${s.name} (Active Response ${s.activeResponseEnabled ? 'enabled' : 'disabled'}).`,
        );
      },
    },
    enable: {
      summary: 'enable Active Response on a segment',
      args: '<name>',
      async run(ctx, argv) {
        const { positionals } = cliArgs(argv, 'segment enable <name>', 1, {});
        await segmentsOf(ctx).enable(positionals[0]!);
        ctx.out(`Active Response enabled on ${positionals[0]}.`);
      },
    },
    disable: {
      summary: 'disable Active Response on a segment',
      args: '<name>',
      async run(ctx, argv) {
        const { positionals } = cliArgs(argv, 'segment disable <name>', 1, {});
        await segmentsOf(ctx).disable(positionals[0]!);
        ctx.out(`Active Response disabled on ${positionals[0]}.`);
      },
    },
    list: {
      summary: 'list segments',
      async run(ctx) {
        for (const s of await segmentsOf(ctx).list()) {
          ctx.out(
            `${s.name.padEnd(24)} active response: ${s.activeResponseEnabled ? 'enabled' : 'disabled'}`,
          );
        }
      },
    },
  },
};
