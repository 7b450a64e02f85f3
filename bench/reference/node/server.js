// helloworld.Greeter on @grpc/grpc-js: a reference point for bench/compare.sh.
// Usage: node server.js PROTO_ROOT PORT
const grpc = require('@grpc/grpc-js');
const loader = require('@grpc/proto-loader');
const [protoRoot, port] = process.argv.slice(2);
const definition = loader.loadSync('helloworld/helloworld.proto', { includeDirs: [protoRoot] });
const helloworld = grpc.loadPackageDefinition(definition).helloworld;
const server = new grpc.Server();
server.addService(helloworld.Greeter.service, {
  SayHello: (call, callback) => callback(null, { message: 'Hello ' + call.request.name }),
});
server.bindAsync(`127.0.0.1:${port}`, grpc.ServerCredentials.createInsecure(), (error) => {
  if (error) { console.error(error); process.exit(1); }
  console.log(`node greeter listening on 127.0.0.1:${port}`);
});
