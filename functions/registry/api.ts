export const handler = async () => { throw new Error('handler not yet written'); };
