using Conduit.Grpc;
using Conduit.Protos.Seeds.GrpcInProduction;
using Conduit.Services.Accounts;
using Conduit.Services.Cache;
using Google.Protobuf;
using Grpc.Core;
using AccountsV1 = Conduit.Protos.Accounts.V1;
using CacheV1 = Conduit.Protos.Cache.V1;

namespace Conduit.Services.Seeds;

/// <summary>
/// rpc.Cache of "gRPC in Production" (protos/seeds/grpc-in-production/app.proto): cache.v1.Cache's
/// Store, Get and Dump under the talk's package, on the same accounts, namespaces, quotas and
/// backend. The caller's token: `authorization: Bearer &lt;token&gt;`, or for Store the talk's
/// account_token field; the talk's GetReq has no token field, so Get needs the header (without
/// one: UNAUTHENTICATED saying how to send it). The talk's Dump is unary: every item in one
/// DumpResp, so an account whose items take more than <see cref="MaxDumpRespBytes"/> is answered
/// RESOURCE_EXHAUSTED pointing at cache.v1's streaming Dump.
/// </summary>
public sealed class GrpcInProductionCacheService(CacheService cache) : Protos.Seeds.GrpcInProduction.Cache.CacheBase
{
    /// <summary>The largest DumpResp: gRPC clients refuse messages over 4 MiB by default.</summary>
    public const int MaxDumpRespBytes = 4 * 1024 * 1024;

    [DryRunSupported]
    public override async Task<StoreResp> Store(StoreReq request, ServerCallContext context)
    {
        await cache.Store(new CacheV1.StoreReq { Key = request.Key, Val = request.Val, AccountToken = request.AccountToken }, context).ConfigureAwait(false);
        return new StoreResp();
    }

    public override async Task<GetResp> Get(GetReq request, ServerCallContext context)
    {
        var reply = await cache.Get(new CacheV1.GetReq { Key = request.Key }, context).ConfigureAwait(false);
        return new GetResp { Val = reply.Val };
    }

    public override async Task<DumpResp> Dump(DumpReq request, ServerCallContext context)
    {
        var response = new DumpResp();
        var size = 0L;
        await cache.Dump(new CacheV1.DumpReq(), new Collector(item =>
        {
            var seed = new DumpItem { Key = item.Key, Val = item.Val };
            size += CodedOutputStream.ComputeMessageSize(seed) + 1;
            if (size > MaxDumpRespBytes)
            {
                throw RpcException.WithDetails(StatusCode.ResourceExhausted,
                    $"The account's keys take more than {MaxDumpRespBytes} bytes, more than one DumpResp may carry; call cache.v1.Cache/Dump, which streams them.",
                    Details.QuotaFailure(("rpc.Cache/Dump", $"at most {MaxDumpRespBytes} bytes per DumpResp")),
                    Details.ErrorInfo("DUMP_TOO_LARGE", CacheService.Domain));
            }
            response.Items.Add(seed);
        }), context).ConfigureAwait(false);
        return response;
    }

    /// <summary>Takes what cache.v1's Dump writes, one item at a time, into the unary answer.</summary>
    private sealed class Collector(Action<CacheV1.DumpItem> add) : IServerStreamWriter<CacheV1.DumpItem>
    {
        public WriteOptions? WriteOptions { get; set; }

        public Task WriteAsync(CacheV1.DumpItem message)
        {
            add(message);
            return Task.CompletedTask;
        }

        public Task WriteAsync(CacheV1.DumpItem message, CancellationToken cancellationToken)
        {
            cancellationToken.ThrowIfCancellationRequested();
            return WriteAsync(message);
        }
    }
}

/// <summary>
/// rpc.Accounts of "gRPC in Production": accounts.v1.Accounts/GetByToken answering the talk's
/// Account{max_cache_keys} (the other accounts.v1 fields have no place in it).
/// </summary>
public sealed class GrpcInProductionAccountsService(AccountsService accounts) : Protos.Seeds.GrpcInProduction.Accounts.AccountsBase
{
    public override async Task<GetByTokenResp> GetByToken(GetByTokenReq request, ServerCallContext context)
    {
        var reply = await accounts.GetByToken(new AccountsV1.GetByTokenReq { Token = request.Token }, context).ConfigureAwait(false);
        return new GetByTokenResp { Account = new Account { MaxCacheKeys = reply.Account.MaxCacheKeys } };
    }
}
