{
  description = "Decent Cloud provider appliance: ledger, controller, node agent and (later) the appliance image";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-24.11";

  outputs = { self, nixpkgs }:
    let
      systems = [ "x86_64-linux" "aarch64-linux" ];
      forAll = f: nixpkgs.lib.genAttrs systems (system: f nixpkgs.legacyPackages.${system});

      # One derivation per binary, all from the same locked workspace.
      workspaceBinary = pkgs: { pname, package, bin }:
        pkgs.rustPlatform.buildRustPackage {
          inherit pname;
          version = "0.1.0";
          src = pkgs.lib.cleanSource ./.;
          cargoLock.lockFile = ./Cargo.lock;
          cargoBuildFlags = [ "-p" package "--bin" bin ];
          # Tests run in the `checks` output, where the whole workspace is tested.
          doCheck = false;
          # The node agent's systemd unit (KillMode=process: VMs outlive it).
          postInstall = pkgs.lib.optionalString (bin == "dc-appliance") ''
            install -Dm644 image/systemd/dc-appliance.service $out/lib/systemd/system/dc-appliance.service
            substituteInPlace $out/lib/systemd/system/dc-appliance.service --replace-fail "@bindir@" "$out/bin"
          '';
          meta.mainProgram = bin;
        };
    in
    {
      packages = forAll (pkgs: rec {
        dc-ledger = workspaceBinary pkgs { pname = "dc-ledger"; package = "dc-ledger"; bin = "dc-ledger"; };
        dcctl = workspaceBinary pkgs { pname = "dcctl"; package = "dc-controller"; bin = "dcctl"; };
        dc-appliance = workspaceBinary pkgs { pname = "dc-appliance"; package = "dc-appliance"; bin = "dc-appliance"; };
        default = dcctl;
      });

      # The appliance image imports this: the agent as a systemd service
      # (the unit comes from the package, see image/systemd/).
      nixosModules.dc-appliance = { pkgs, ... }: {
        systemd.packages = [ self.packages.${pkgs.system}.dc-appliance ];
        systemd.services.dc-appliance.wantedBy = [ "multi-user.target" ];
        environment.systemPackages = with pkgs; [ qemu iproute2 nftables ];
      };

      checks = forAll (pkgs: {
        workspace-tests = pkgs.rustPlatform.buildRustPackage {
          pname = "dc-workspace-tests";
          version = "0.1.0";
          src = pkgs.lib.cleanSource ./.;
          cargoLock.lockFile = ./Cargo.lock;
          cargoTestFlags = [ "--workspace" ];
          # Scenario tests need ../shared (attestation vectors) which a
          # sandboxed build cannot see; they are skipped there with a message.
          nativeCheckInputs = [ pkgs.procps ];
        };
      });

      devShells = forAll (pkgs: {
        default = pkgs.mkShell {
          packages = with pkgs; [ cargo rustc clippy rustfmt pkg-config postgresql qemu nodejs nftables iproute2 cmake perl ];
        };
      });
    };
}
